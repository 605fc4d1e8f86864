"""Pure pipeline logic (no Faust, no Kafka): session state and recommendation assembly."""
