//! Language front ends.
pub mod c;
