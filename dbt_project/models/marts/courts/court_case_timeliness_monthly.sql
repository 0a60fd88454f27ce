-- Timeliness of disposed cases by month of disposal, court and offence type.
-- Courts missing from the register keep their code, with no name or region.
select
    cast({{ dbt.date_trunc('month', 'd.disposal_date') }} as date) as disposal_month,
    d.court_code,
    r.court_name,
    r.region,
    d.offence_type,
    count(*) as cases_disposed,
    cast(avg(d.days_to_disposal) as double) as avg_days_to_disposal,
    min(d.days_to_disposal) as min_days_to_disposal,
    max(d.days_to_disposal) as max_days_to_disposal,
    cast(sum(case when d.days_to_disposal > 182 then 1 else 0 end) as bigint) as cases_over_six_months,
    cast(avg(d.hearings) as double) as avg_hearings
from {{ ref('int_courts__case_durations') }} as d
left join {{ ref('stg_courts__court_register') }} as r on r.court_code = d.court_code
where d.disposal_date is not null
group by 1, 2, 3, 4, 5
