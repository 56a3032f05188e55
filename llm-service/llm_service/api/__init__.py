"""HTTP layer: one router per endpoint group; routes validate, call the serving object, return a schema."""
