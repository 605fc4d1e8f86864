"""Operations: the local Kafka broker, topic administration and operator tooling."""
