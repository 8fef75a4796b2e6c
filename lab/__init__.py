"""Host-side tools of the lab: start and stop it, switch modes, measure it."""
