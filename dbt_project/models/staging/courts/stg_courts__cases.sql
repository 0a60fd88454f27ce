select
    case_id,
    court_code,
    offence_type,
    received_date,
    disposal_date,
    status,
    updated_at
from {{ source('staged_courts', 'cases') }}
