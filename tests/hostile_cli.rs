//! placeholder, filled by issue #21 work
