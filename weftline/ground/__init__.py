"""The ground floor: what every layer shares and that imports no layer — configuration
models, the metrics registry, project and token lookup, the agent event schema, the wire
formats shared by the edge and the workers, id and time helpers, rejection reasons."""
