"""Modules: named parts of a service (auth, config, error, logger and the event-sourcing
machinery), wired by the module loader in dependency order."""
