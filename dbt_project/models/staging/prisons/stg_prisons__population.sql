select
    snapshot_date,
    establishment_code,
    establishment_name,
    category,
    population,
    operational_capacity,
    _batch_date as batch_date
from {{ source('staged_prisons', 'population') }}
