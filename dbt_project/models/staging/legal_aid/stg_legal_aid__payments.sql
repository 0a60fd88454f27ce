select
    payment_id,
    payment_date,
    provider_id,
    category,
    amount,
    case_reference,
    _batch_date as batch_date
from {{ source('staged_legal_aid', 'payments') }}
