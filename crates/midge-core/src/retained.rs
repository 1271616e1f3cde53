//! Retained messages indexed by topic. (being written)
