-- De-identified defendants (prepared in Python from the staged CDC table: no names, birth dates or postcodes).
select
    defendant_id,
    case_id,
    age_band,
    postcode_area,
    custody_status
from {{ source('prepared_courts', 'defendant_profiles') }}
