"""tunegate's command line and its built-in demo data: the one layer that sees every other.

`tasks/` (stages) < `flows/` (the DAGs, config, recording) < `deployments/` (long-running entry
points) < `tunegate/` (the CLI). See ARCHITECTURE.md; `lint-imports` checks the order.
"""
