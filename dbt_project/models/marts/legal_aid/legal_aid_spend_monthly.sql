-- Legal-aid spend by month and category.
select
    cast({{ dbt.date_trunc('month', 'payment_date') }} as date) as payment_month,
    category,
    count(*) as payments,
    count(distinct provider_id) as providers,
    cast(sum(amount) as decimal(18, 2)) as total_amount
from {{ ref('stg_legal_aid__payments') }}
group by 1, 2
