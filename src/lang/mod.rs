//! Language front ends.
pub mod c;
pub mod python;
