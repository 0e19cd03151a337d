"""Device meshes and sharding rules (`sharding`, `rules`): where arrays live, no training code."""
