-- One row per monitored person and day: what their tag reported.
select
    subject_id,
    event_date,
    count(*) as events,
    cast(sum(case when event_type = 'violation' then 1 else 0 end) as bigint) as violations,
    cast(sum(case when event_type = 'tamper' then 1 else 0 end) as bigint) as tamper_events,
    cast(sum(case when event_type = 'battery_low' then 1 else 0 end) as bigint) as battery_warnings
from {{ ref('stg_monitoring__em_events') }}
group by subject_id, event_date
