-- Electronic-monitoring compliance per day, built one day (or a backfill range) at a time:
-- vars start_date/end_date bound the days rebuilt. Locally the lake plugin replaces exactly those
-- days in the Iceberg table; on Athena an Iceberg merge on event_date does the same.
{{ config(
    materialized='external' if target.type == 'duckdb' else 'incremental',
    incremental_strategy='merge',
    unique_key='event_date',
    partitioned_by=['event_date'],
    replace_range=['event_date', var('start_date'), var('end_date')],
    partition_day='event_date',
    tags=['daily'],
) }}

select
    event_date,
    count(*) as subjects_monitored,
    cast(sum(case when violations = 0 and tamper_events = 0 then 1 else 0 end) as bigint) as subjects_compliant,
    cast(sum(violations) as bigint) as violations,
    cast(sum(tamper_events) as bigint) as tamper_events,
    cast(sum(battery_warnings) as bigint) as battery_warnings,
    cast(sum(case when violations = 0 and tamper_events = 0 then 1 else 0 end) as double) / count(*) as compliance_rate
from {{ ref('int_monitoring__subject_days') }}
where event_date >= date '{{ var("start_date") }}' and event_date < date '{{ var("end_date") }}'
group by event_date
