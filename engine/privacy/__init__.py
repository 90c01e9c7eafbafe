"""Privacy layer: secret sharing, the consortium roster, and the secure-aggregation round protocol."""
