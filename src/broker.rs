//! broker (being written)
