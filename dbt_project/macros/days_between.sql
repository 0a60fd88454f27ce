{# Whole days from start_date to end_date. date_diff('day', a, b) means the same in DuckDB and
   Athena (Trino); dbt.datediff on dbt-athena goes through to_milliseconds(interval), which does not
   survive transpilation, so the parity test caught it. #}
{% macro days_between(start_date, end_date) -%}
  date_diff('day', {{ start_date }}, {{ end_date }})
{%- endmacro %}
