//! Layers: concerns written once that wrap any [`Backend`](crate::Backend), built-in or
//! user-written.
