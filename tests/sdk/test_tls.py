"""HTTPS (issue 15): the official SDK against `vpcep serve --tls-cert --tls-key`, with
certificate verification on and the CA from `vpcep admin tls self-signed` passed in
HttpConfig.ssl_ca_cert; without that CA the certificate is refused."""

import json
import subprocess

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import SslHandShakeException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvpc.v2 import VpcClient
from huaweicloudsdkvpcep.v1 import VpcepClient
import huaweicloudsdkvpc.v2.model as vm
import huaweicloudsdkvpcep.v1.model as ep

from conftest import VPCEP_BIN, Server


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("vpcep-tls")
    made = json.loads(subprocess.run(
        [str(VPCEP_BIN), "admin", "tls", "self-signed", "--out", str(base / "tls"), "--output", "json"],
        check=True, capture_output=True, text=True, timeout=60).stdout)
    data = base / "data"
    data.mkdir()
    srv = Server(VPCEP_BIN, data, extra_args=("--tls-cert", made["cert"], "--tls-key", made["key"]))
    try:
        srv.start()
        srv.ca = made["cert"]
        yield srv
    finally:
        srv.stop()


def config(ca=None) -> HttpConfig:
    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 30)
    cfg.ignore_ssl_verification = False
    cfg.ssl_ca_cert = ca
    return cfg


def clients(server, ca, name):
    info = server.admin("account", "create", name)
    creds = BasicCredentials(info["access_key"], info["secret_key"], info["project_id"])
    vpcep = VpcepClient.new_builder().with_http_config(config(ca)).with_credentials(creds) \
        .with_endpoint(server.url).build()
    vpc = VpcClient.new_builder().with_http_config(config(ca)).with_credentials(creds) \
        .with_endpoint(server.url).build()
    return vpcep, vpc


def test_tls_sdk_works_with_verification_and_the_ca(tls_server):
    assert tls_server.url.startswith("https://"), tls_server.url
    vpcep, vpc = clients(tls_server, tls_server.ca, "tls-with-ca")
    created = vpc.create_vpc(vm.CreateVpcRequest(body=vm.CreateVpcRequestBody(
        vpc=vm.CreateVpcOption(cidr="10.0.0.0/16", name="over-tls")))).vpc
    listed = vpc.list_vpcs(vm.ListVpcsRequest()).vpcs
    assert created.id in {v.id for v in listed}
    quotas = vpcep.list_quota_details(ep.ListQuotaDetailsRequest())
    assert quotas.quotas.resources, quotas


def test_tls_sdk_refuses_an_unknown_certificate(tls_server):
    # Verification on, the default CA bundle (certifi): the self-signed certificate is
    # not trusted, so the SDK fails before any request is sent.
    vpcep, _ = clients(tls_server, None, "tls-without-ca")
    with pytest.raises(SslHandShakeException) as err:
        vpcep.list_quota_details(ep.ListQuotaDetailsRequest())
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value), err.value
