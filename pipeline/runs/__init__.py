"""The run folder, owned in one place: its layout, lifecycle (create, resume, open), saved config, lock, trust
checks, the hand-over to other ranks, and reading runs back."""
