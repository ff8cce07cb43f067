//! Procedural macros for cachestack (filled in by the macro issue).
