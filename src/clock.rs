//! clock (being written)
