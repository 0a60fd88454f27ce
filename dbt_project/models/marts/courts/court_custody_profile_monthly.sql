-- Who is charged, and held in custody, by month of receipt, court and age band.
select
    cast({{ dbt.date_trunc('month', 'c.received_date') }} as date) as received_month,
    c.court_code,
    d.age_band,
    count(*) as defendants,
    cast(sum(case when d.custody_status = 'remanded_in_custody' then 1 else 0 end) as bigint) as remanded_in_custody,
    cast(sum(case when d.custody_status = 'remanded_in_custody' then 1 else 0 end) as double) / count(*) as remand_rate
from {{ ref('stg_courts__defendant_profiles') }} as d
inner join {{ ref('stg_courts__cases') }} as c on c.case_id = d.case_id
group by 1, 2, 3
