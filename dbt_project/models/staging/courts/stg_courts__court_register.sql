select
    court_code,
    court_name,
    court_type,
    region
from {{ source('staged_courts', 'court_register') }}
