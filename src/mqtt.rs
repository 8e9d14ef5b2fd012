//! mqtt (being written)
