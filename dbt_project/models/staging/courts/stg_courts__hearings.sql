select
    hearing_id,
    case_id,
    court_code,
    hearing_date,
    hearing_type,
    outcome
from {{ source('staged_courts', 'hearings') }}
