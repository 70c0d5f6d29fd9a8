"""Payment contracts: MSSP shared savings and losses."""
