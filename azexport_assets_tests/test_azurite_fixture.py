from azure.storage.blob import ContainerClient


def test_sas_upload_round_trip(azurite, container, sas_token):
    client = ContainerClient(azurite.account_url, container.container_name, credential=sas_token)
    client.upload_blob("hello/world.txt", b"hi \xc3\xa9", overwrite=True)
    assert container.download_blob("hello/world.txt").readall() == "hi é".encode()
