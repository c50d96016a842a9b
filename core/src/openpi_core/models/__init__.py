"""Framework-free descriptions of the π-family models: configs and weight schemas."""
