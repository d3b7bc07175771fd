//! The committed OpenAPI document is the one the code generates.

#[test]
fn committed_openapi_json_matches_the_handlers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed = std::fs::read_to_string(path).expect("openapi.json is committed");
    let generated = sandbox_provisioner::api::openapi_document();
    assert!(
        committed == generated,
        "openapi.json is out of date with the handlers: regenerate it with\n    cargo run -q -- openapi > openapi.json"
    );
}

#[test]
fn every_route_and_error_shape_is_described() {
    let doc: serde_json::Value =
        serde_json::from_str(&sandbox_provisioner::api::openapi_document()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/health", &["get"][..]),
        ("/readyz", &["get"]),
        ("/api/sandboxes", &["get", "post"]),
        ("/api/sandboxes/{sandbox_id}", &["get", "delete"]),
    ] {
        for m in methods {
            let op = &paths[path][*m];
            assert!(op.is_object(), "{m} {path} is missing");
            for (code, response) in op["responses"].as_object().unwrap() {
                if !code.starts_with('2') {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{m} {path} {code}"
                    );
                }
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Sandbox",
        "Phase",
        "CreateRequest",
        "SandboxList",
        "Deleted",
        "ErrorBody",
        "Health",
    ] {
        assert!(schemas.contains_key(name), "schema {name} is missing");
    }
}
