//! boards (being written)
