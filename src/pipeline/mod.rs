//! The chunk pipeline, in both directions: [`store`] (sources into packs and
//! a snapshot) and [`fetch`] (chunks back into files). Every command that
//! backs up or restores goes through it; none borrows another's internals.

mod direct;
pub mod fetch;
pub mod store;
