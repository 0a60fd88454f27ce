-- One row per case: receipt to first hearing and to disposal, in days.
with first_hearings as (
    select case_id, min(hearing_date) as first_hearing_date, count(*) as hearings
    from {{ ref('stg_courts__hearings') }}
    group by case_id
)

select
    c.case_id,
    c.court_code,
    c.offence_type,
    c.status,
    c.received_date,
    c.disposal_date,
    h.first_hearing_date,
    coalesce(h.hearings, 0) as hearings,
    {{ days_between('c.received_date', 'h.first_hearing_date') }} as days_to_first_hearing,
    {{ days_between('c.received_date', 'c.disposal_date') }} as days_to_disposal
from {{ ref('stg_courts__cases') }} as c
left join first_hearings as h on h.case_id = c.case_id
