"""Moving a service between hosts: cold, state-transfer and (where CRIU works) live migration, and standbys."""
