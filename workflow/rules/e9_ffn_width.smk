# E9 feed-forward width (claim C7): not built yet.
