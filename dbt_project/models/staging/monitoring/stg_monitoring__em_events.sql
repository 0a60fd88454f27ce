-- Tag events without the location columns (personal data no mart needs).
select
    event_id,
    subject_id,
    device_id,
    event_time,
    cast(event_time as date) as event_date,
    event_type,
    _batch_date as batch_date
from {{ source('staged_monitoring', 'em_events') }}
