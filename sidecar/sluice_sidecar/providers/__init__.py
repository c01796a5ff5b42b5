"""Provider adapters: one module per wire format; ``base`` holds the interface they implement."""
