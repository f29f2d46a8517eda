//! One request's decisions, as pure functions the proxy-wasm shell calls in order:
//! [`request::on_head`] (is it ours? authorised? acceptable?), [`request::on_body`] (resolve,
//! pick, rewrite), [`outcome::record`] (feed the health tracker); [`reload::forget_removed`] at configure time. The shell only moves bytes
//! and headers between Envoy and these functions.

pub mod auth;
pub mod headers;
pub mod health_report;
pub mod json_out;
pub mod listing;
pub mod log_props;
pub mod upstream;
pub mod outcome;
pub mod reload;
pub mod request;
pub mod response;
pub mod spend;
