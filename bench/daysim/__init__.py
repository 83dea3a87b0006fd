"""The simulated studio day: seeded arrival traces (`traces`), a discrete-event simulation of the fleet that runs
pod-manager's real policies on them (`engine`), and the metrics, tables and plots of its runs (`report`)."""
