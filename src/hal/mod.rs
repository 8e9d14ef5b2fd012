//! hal (being written)
