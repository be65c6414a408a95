//! The user's surface: flags and command words ([`cli`]), `dirsync status`
//! over the control socket ([`control`]), the local web page and
//! `/metrics` ([`dashboard`]) and the progress display ([`progress`]).
//! Depends on everything below; nothing depends on it.

pub mod cli;
pub mod control;
pub mod dashboard;
pub mod progress;
