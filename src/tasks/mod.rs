//! Background tasks. Each runs until its shutdown signal turns true (or its sender is dropped).

pub mod leader;
pub mod pool_keeper;
pub mod reaper;
