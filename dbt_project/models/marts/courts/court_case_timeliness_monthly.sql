-- Timeliness of disposed cases by month of disposal, court and offence type.
select
    cast({{ dbt.date_trunc('month', 'disposal_date') }} as date) as disposal_month,
    court_code,
    offence_type,
    count(*) as cases_disposed,
    cast(avg(days_to_disposal) as double) as avg_days_to_disposal,
    min(days_to_disposal) as min_days_to_disposal,
    max(days_to_disposal) as max_days_to_disposal,
    cast(sum(case when days_to_disposal > 182 then 1 else 0 end) as bigint) as cases_over_six_months,
    cast(avg(hearings) as double) as avg_hearings
from {{ ref('int_courts__case_durations') }}
where disposal_date is not null
group by 1, 2, 3
