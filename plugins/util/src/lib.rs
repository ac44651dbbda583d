//! Small mechanisms that every berth crate shares, each written once: the names a user or a
//! runtime hands us ([`names`]), stable short hashes ([`hash`]), files replaced durably and
//! lock files ([`fs`]), finding a system tool ([`tool`]), `tc`'s units ([`units`]), and unix
//! sockets at paths longer than `sun_path` ([`unix`]).
//!
//! Nothing here knows about CNI or volumes: each check returns a small error saying what is
//! wrong with the value, and the caller says which field it was and maps it to its own codes.

pub mod fs;
pub mod hash;
pub mod names;
pub mod tool;
pub mod units;
pub mod unix;
