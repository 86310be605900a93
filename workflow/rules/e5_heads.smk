# E5 head-channel non-identifiability (claim C4): not built yet.
