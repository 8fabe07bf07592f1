use super::*;
use crate::store::SqliteStore;
use weft_taskbook::objects::{parse_objects, SourcedObject};

fn registry() -> ObjectRegistry<SqliteStore> {
    ObjectRegistry::new(
        SqliteStore::open_in_memory().unwrap(),
        SecretBox::from_key(&[9; 32]),
    )
}

fn objects(source: &str) -> Vec<SourcedObject> {
    parse_objects(source, Path::new("objects.yml")).unwrap()
}

async fn apply(
    registry: &ObjectRegistry<SqliteStore>,
    source: &str,
) -> Result<Vec<(String, ApplyAction)>, ObjectError> {
    Ok(registry
        .apply(objects(source), false)
        .await?
        .into_iter()
        .map(|a| (a.name, a.action))
        .collect())
}

const PROD: &str = "apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: prod}\n---\napiVersion: weft/v1\nkind: Variables\nmetadata: {name: app, namespace: prod}\nspec: {vars: {mode: 0644, replicas: 3}}\n";

#[tokio::test]
async fn apply_creates_then_configures_and_an_unchanged_object_is_not_written() {
    let registry = registry();
    registry.ensure_builtin_namespaces().await.unwrap();
    assert_eq!(
        apply(&registry, PROD).await.unwrap(),
        [
            ("prod".into(), ApplyAction::Created),
            ("app".into(), ApplyAction::Created)
        ]
    );
    let revision = registry.store.current_revision().await.unwrap();
    assert_eq!(
        apply(&registry, PROD).await.unwrap(),
        [
            ("prod".into(), ApplyAction::Unchanged),
            ("app".into(), ApplyAction::Unchanged)
        ]
    );
    assert_eq!(registry.store.current_revision().await.unwrap(), revision);
    let first = registry
        .get(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap()
        .unwrap();
    let changed = PROD.replace("replicas: 3", "replicas: 4");
    assert_eq!(
        apply(&registry, &changed).await.unwrap()[1],
        ("app".into(), ApplyAction::Configured)
    );
    let second = registry
        .get(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.record.uuid, first.record.uuid);
    assert_eq!(second.record.generation, 2);
    assert!(second.resource_version > first.resource_version);
    // The document reads back as it was written: `0644` is still a plain scalar.
    assert!(second.record.document.contains("mode: 0644"));
    let json = second.to_json().unwrap();
    assert_eq!(json["metadata"]["generation"], 2);
    assert_eq!(
        json["metadata"]["resource_version"],
        second.resource_version.to_string()
    );
}

#[tokio::test]
async fn a_stale_resource_version_is_refused_and_nothing_is_written() {
    let registry = registry();
    registry.ensure_builtin_namespaces().await.unwrap();
    apply(&registry, PROD).await.unwrap();
    let read = registry
        .get(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap()
        .unwrap();
    let with_version = |replicas: u32| {
        format!(
            "apiVersion: weft/v1\nkind: Variables\nmetadata: {{name: app, namespace: prod, resource_version: \"{}\"}}\nspec: {{vars: {{replicas: {replicas}}}}}\n",
            read.resource_version
        )
    };
    // Two writers read the same version; the first wins, the second is refused.
    apply(&registry, &with_version(5)).await.unwrap();
    let error = apply(&registry, &with_version(6)).await.unwrap_err();
    assert!(matches!(error, ObjectError::Stale { .. }), "{error}");
    let now = registry
        .get(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap()
        .unwrap();
    assert!(now.record.document.contains("replicas: 5"));
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_masked_when_shown_and_open_for_the_master() {
    let registry = registry();
    registry.ensure_builtin_namespaces().await.unwrap();
    let secret = "apiVersion: weft/v1\nkind: Secret\nmetadata: {name: db}\nspec: {data: {password: s3cr3t-pw, pin: 1234}}\n";
    apply(&registry, secret).await.unwrap();
    for entry in registry.store.list("/").await.unwrap() {
        let raw = String::from_utf8_lossy(&entry.value);
        assert!(!raw.contains("s3cr3t-pw"), "{raw}");
    }
    let stored = registry
        .get(Kind::Secret, None, "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.record.namespace.as_deref(), Some("default"));
    let shown = stored.to_json().unwrap().to_string();
    assert!(!shown.contains("s3cr3t-pw") && shown.contains(SECRET_MASK));
    let opened = registry.open_secret(&stored).unwrap();
    assert_eq!(opened["password"], "s3cr3t-pw");
    assert_eq!(opened["pin"], "1234");
    // Unchanged although every seal differs; the mask itself is refused.
    assert_eq!(
        apply(&registry, secret).await.unwrap()[0].1,
        ApplyAction::Unchanged
    );
    let masked = secret.replace("s3cr3t-pw", &format!("\"{SECRET_MASK}\""));
    assert!(matches!(
        apply(&registry, &masked).await.unwrap_err(),
        ObjectError::Invalid(_)
    ));
}

#[tokio::test]
async fn references_must_exist_and_a_failed_apply_stores_nothing() {
    let registry = registry();
    registry.ensure_builtin_namespaces().await.unwrap();
    let revision = registry.store.current_revision().await.unwrap();
    let cases = [
        ("apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: ok}\n---\napiVersion: weft/v1\nkind: Variables\nmetadata: {name: app, namespace: nowhere}\n", "namespace `nowhere` does not exist", 7),
        ("apiVersion: weft/v1\nkind: ClusterVariablesBinding\nmetadata: {name: b}\nspec: {cluster_variables: dns, namespaces: [default]}\n", "ClusterVariables `dns` does not exist", 4),
        ("apiVersion: weft/v1\nkind: ClusterVariables\nmetadata: {name: dns}\n---\napiVersion: weft/v1\nkind: ClusterVariablesBinding\nmetadata: {name: b}\nspec:\n  cluster_variables: dns\n  namespaces: [default, staging]\n", "namespace `staging`", 10),
        ("apiVersion: weft/v1\nkind: Node\nmetadata: {name: n1}\n", "registered by `weft minion join`", 2),
        ("apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: weft/v1\nkind: Namespace\nmetadata: {name: a}\n", "appears twice", 7),
    ];
    for (source, expected, line) in cases {
        let error = apply(&registry, source).await.unwrap_err();
        let ObjectError::Invalid(error) = &error else {
            panic!("{source}: {error}");
        };
        assert!(error.message.contains(expected), "{source}: {error}");
        assert_eq!(error.span.map(|s| s.line), Some(line), "{source}: {error}");
        assert_eq!(error.file.as_deref(), Some(Path::new("objects.yml")));
    }
    assert_eq!(registry.store.current_revision().await.unwrap(), revision);
}

#[tokio::test]
async fn namespaces_holding_objects_and_built_in_ones_are_not_deleted() {
    let registry = registry();
    registry.ensure_builtin_namespaces().await.unwrap();
    apply(&registry, PROD).await.unwrap();
    for (name, expected) in [("default", "built in"), ("prod", "Variables/app")] {
        let error = registry
            .delete(Kind::Namespace, None, name)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    assert!(registry
        .delete(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap());
    assert!(!registry
        .delete(Kind::Variables, Some("prod"), "app")
        .await
        .unwrap());
    assert!(registry
        .delete(Kind::Namespace, None, "prod")
        .await
        .unwrap());
}
