-- Occupancy per establishment and day: how full each prison is against its safe capacity.
select
    snapshot_date,
    establishment_code,
    establishment_name,
    category,
    population,
    operational_capacity,
    cast(population as double) / nullif(operational_capacity, 0) as occupancy_rate,
    population > operational_capacity as overcrowded
from {{ ref('stg_prisons__population') }}
