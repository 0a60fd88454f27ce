{# Models land in the lake namespaces themselves (curated_<domain>), not <target schema>_<custom>. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ custom_schema_name if custom_schema_name is not none else target.schema }}
{%- endmacro %}
