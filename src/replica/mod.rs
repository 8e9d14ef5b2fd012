//! replica (being written)
