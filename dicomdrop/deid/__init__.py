"""De-identification: the PS3.15 profile engine, keyed derivations, and the verification scan."""
