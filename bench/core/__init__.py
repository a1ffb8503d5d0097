"""The core: names, configuration, registries and seeds. Imports nothing from bench but itself; the only
part of bench that algorithms/ and datasets/ may import."""
