//! Shared test support: the backend conformance suite.
