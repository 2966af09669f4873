//! Laptop-mode adapters: everything under one state directory, no AWS account.
